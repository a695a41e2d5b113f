"""The command line: click commands (:mod:`.commands`), rich output (:mod:`.console`,
:mod:`.output`, :mod:`.reports`, :mod:`.log_view`), the interactive menu (:mod:`.menu`,
:mod:`.menu_core`, :mod:`.menu_fold`), doctor, the launcher, the demo, and session
control from outside the bus.
"""
