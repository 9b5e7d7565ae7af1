"""`python -m tfcompress`: the same command line as `tfcompress`."""

from tfcompress.cli import main

if __name__ == "__main__":
    main(prog_name="tfcompress")
