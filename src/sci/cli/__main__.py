"""`python -m sci.cli`: the same entry point as the `sci` command."""

from sci.cli.main import main

if __name__ == "__main__":
    main()
