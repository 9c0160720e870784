"""Command line front door and the small pieces every stage shares.

- cli.py        the `facesift` console script; discovers subcommands in `tools/commands/`
- config.py     dataclass configs, YAML + `--set` overrides, secret redaction, saved configs
- atomic.py     temp-file + rename writes so killed jobs leave no half files
- logsetup.py   logging format, secret scrubbing, the one-line summary
- flickr_sandbox.py  local Flickr-compatible API + image server (tests, demo; `facesift sandbox`)
- sandbox_photos.py  the sandbox's seeded photo catalogue and per-id image variants
- commands/     one module per subcommand: `register(subparsers)` adds its parser
- bench_*.py    side-by-side benchmarks against the tool a user would otherwise pick
"""
