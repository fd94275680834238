"""The command line: parse, call sci.api, render, map errors to exit codes."""
