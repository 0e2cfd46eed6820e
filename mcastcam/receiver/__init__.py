"""The viewer end's shell: the app on the driver, the CLI, the HTTP and TCP re-serves."""
