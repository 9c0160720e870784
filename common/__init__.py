"""The common floor: what every stage shares, importing no stage and nothing above.

- config.py     dataclass configs, YAML + `--set` overrides, secret redaction, saved configs
- atomic.py     temp-file + rename writes so killed jobs leave no half files
- logsetup.py   logging format, secret scrubbing, quiet third-party loggers, the one-line summary
- stopping.py   stop signals (SIGTERM/SIGUSR1/Ctrl-C) honoured at a step boundary
"""
