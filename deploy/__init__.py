"""Deploy bundles for edge units (DESIGN.md: bundle build/verify/install, systemd/udev
templates, first-boot self-test).

Not built yet: no issue has asked for it so far.  The folder exists so the layout is fixed;
nothing here is imported by the rest of the package.
"""
