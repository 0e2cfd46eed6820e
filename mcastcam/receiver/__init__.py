"""The receiver: reassembly and liveness (pure), and the app/CLI/HTTP/TCP shell."""
