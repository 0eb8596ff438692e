"""Run chat_server: `python run.py [serve|migrate|create-user NAME] [--help]`."""

from chat_server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
