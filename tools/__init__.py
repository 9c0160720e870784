"""facesift: build face datasets from the open web and learn face representations on them.

This folder is the package root, `facesift`, and the top floor of the house: what stands above
the stages (docs/architecture.md). The stages are sub-packages with folders of their own
(`facesift.curate` is curate/, ... `facesift.common` is common/, the floor they all share).

- cli.py             the `facesift` console script (and `python -m facesift`); subcommands from commands/
- commands/          one module per subcommand: `register(subparsers)` adds its parser, then calls a stage
- flickr_sandbox.py  local Flickr-compatible API + image server (tests, demo; `facesift sandbox`)
- sandbox_config.py  what the sandbox serves: catalogue size, faults, address (`SandboxConfig`)
- sandbox_photos.py  the sandbox's seeded photo catalogue and per-id image variants

Not installed (scripts beside the package, see setup.py): bench_*.py (side-by-side benchmarks
against the tool a user would otherwise pick), gpu_*.py/.sh (the GPU-session kit), checkout.py
(import an uninstalled checkout), demo.sh.
"""
__version__ = "0.1.0"
