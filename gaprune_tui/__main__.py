from gaprune_tui.cli import main

raise SystemExit(main())
