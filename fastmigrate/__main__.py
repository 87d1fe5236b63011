from fastmigrate.cli import main

raise SystemExit(main())
