from matebit.cli import entry

entry()
