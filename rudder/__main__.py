from rudder.cli.main import main

raise SystemExit(main())
