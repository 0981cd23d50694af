"""The daemon's composition: the loop, the parts each config section builds, reload, the camera, one
frame through the stages, commands and background work."""
