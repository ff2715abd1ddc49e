from vms.cli import main

main()
