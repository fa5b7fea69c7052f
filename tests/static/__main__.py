from tests.static.tools import main

raise SystemExit(main())
