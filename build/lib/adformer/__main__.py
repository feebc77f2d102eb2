from adformer.cli import main

raise SystemExit(main())
