"""``python -m callscope ...`` runs the callscope command installed beside
this Python."""
import os
import shutil
import sys


def main():
    here = os.path.join(os.path.dirname(sys.executable), "callscope")
    exe = here if os.access(here, os.X_OK) else shutil.which("callscope")
    if exe is None:
        sys.exit("callscope: error: the callscope command is not installed")
    os.execv(exe, [exe] + sys.argv[1:])


if __name__ == "__main__":
    main()
