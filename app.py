"""The kefer app: python app.py [--checkpoint PATH] [--port 7860] ... (the same as ``kefer app``)."""
import sys

from kefer.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
