from custody.cli import main

raise SystemExit(main())
