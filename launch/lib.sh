# Shared by the launch scripts: error exit, and running (or with --dry-run, printing) commands.
# The caller sets DRY_RUN=0|1 before calling `run`.

die() { echo "error: $*" >&2; exit 2; }

# Print a command the way a shell would read it back (quotes only where needed).
show() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}

run() { if [ "$DRY_RUN" = 1 ]; then show "$@"; else "$@"; fi; }
