from ebpf_sidecar.cli import main

raise SystemExit(main())
