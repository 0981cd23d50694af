"""Tools around the bin: the fleet simulator and a local broker for the demo, the bench and the tests."""
