from greencompress.cli import main

main()
