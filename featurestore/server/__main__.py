"""``python -m featurestore.server --repo DIR [--port N] [--workers N]``."""

from featurestore.server.run import main

main()
