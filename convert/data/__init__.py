"""Datasets on the workstation: check, sample, split off a hold-out, synthesise, pull a device's samples."""
