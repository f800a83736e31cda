#!/bin/sh
# The image's entry point: a skinlesion subcommand when the first argument names one, else snakemake.
set -e
case "${1:-}" in
  download|make-sample|mirror|predict|serve|app) exec skinlesion "$@" ;;
  skinlesion) shift; exec skinlesion "$@" ;;
  *) exec snakemake "$@" ;;
esac
