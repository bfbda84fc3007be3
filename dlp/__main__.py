from . import compute
from .cli import main

compute.claim()  # a command-line run does all its torch work on its main thread (see dlp.compute)
raise SystemExit(main())
