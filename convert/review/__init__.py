"""The review station (`smartbin review`): what the bins kept, looked at and labelled on a local page."""
