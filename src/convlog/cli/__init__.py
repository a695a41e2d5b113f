"""The command line: click commands (:mod:`.commands`), rich output, the interactive
menu, doctor, the launcher, the demo, and session control from outside the bus.
"""
