"""The ``rudder`` command. Subcommands import their dependencies lazily."""
