"""The camera end's shell: sources (V4L2, files, test pattern), the app on the driver, the CLI."""
