"""Train kefer: python train.py --dataset ferplus [--preset cpu] ... (the same as ``kefer train``)."""
import sys

from kefer.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
