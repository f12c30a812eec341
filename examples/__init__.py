"""Complete examples of lopt on your own problems (README, "Your own problems"); each file is
quoted there in full and run by tests/test_examples.py."""
