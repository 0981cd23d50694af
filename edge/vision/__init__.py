"""Frame -> prediction -> decision: preprocessing, presence and the vote."""
