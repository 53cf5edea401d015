"""Device drivers and simulators: cameras, trigger controller, illumination.

Drivers depend only on ``edge.core``/``edge.errors``/``edge.physics``; they never import the
pipeline.  Every device has a simulator so everything runs without hardware.
"""
