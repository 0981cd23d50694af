"""The long runs behind `make fuzz`, `make soak` and `make field-day`; the suite runs short versions of them."""
