"""The orchestration: the command line, experiments, the plan of stages, the workers that run
them (in process or on Ray), the run folder's results and its resume.

It sits on top of everything else: it imports the core, the ML services and the plugins, and
nothing below it imports it (``tests/test_layers.py``). The leaderboard reads its results rows.
"""
