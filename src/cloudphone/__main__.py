"""``python -m cloudphone``: the same as the ``cloudphone`` command."""

from cloudphone.cli import main

main()
