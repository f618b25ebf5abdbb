"""A child for tests/test_background.py: lowers itself like shared/background's children, then
prints its scheduling policy and echoes its stdin."""
import os
import sys

from shared.background import lower_to_idle

if __name__ == "__main__":
    lower_to_idle()
    sys.stdout.write(f"{os.sched_getscheduler(0)} {sys.stdin.read()}")
