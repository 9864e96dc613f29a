from spindle.cli import main

raise SystemExit(main())
