from esc50ann.cli import main

raise SystemExit(main())
