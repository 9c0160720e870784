"""One module per `facesift` subcommand.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed args and returning an exit code. Heavy imports (torch, faiss)
happen inside those callables so `facesift --help` stays fast.
"""
