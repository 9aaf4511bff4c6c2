"""``python -m hf_context_synthesis.cli`` (and ``accelerate launch -m hf_context_synthesis.cli``)."""

import sys

from .main import main

sys.exit(main())
