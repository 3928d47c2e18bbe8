# Shared by the launch scripts: error exit, quoting, running (or with --dry-run, printing)
# commands, shipping the checkout. The caller sets DRY_RUN=0|1 before calling `run`.

die() { echo "error: $*" >&2; exit 2; }

# Print a command the way a shell would read it back (quotes only where needed). Also how every
# value goes into a command string a remote shell runs (ssh --command, sbatch --wrap, xpk
# --command): a space, `;`, `$` or quote in it stays part of one argument.
show() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}

run() { if [ "$DRY_RUN" = 1 ]; then show "$@"; else "$@"; fi; }

# Ship only what git tracks, as committed at HEAD: never workdir/, demo_data/, logs/ or .venv/.
# Uncommitted edits are not shipped either (a warning says so): the run is a commit you can name.
# ship_archive ROOT TARBALL
ship_archive() {
  local root="$1" out="$2" rev n
  rev="$(git -C "$root" rev-parse --short HEAD 2>/dev/null)" ||
    die "$root is not a git checkout with a commit; ship it with --repo=URL instead"
  n="$(git -C "$root" ls-tree -r --name-only HEAD | wc -l | tr -d ' ')"
  if [ -n "$(git -C "$root" --no-optional-locks status --porcelain --untracked-files=no)" ]; then
    echo "warning: uncommitted changes in $root are not shipped; commit them first" >&2
  fi
  local note="the $n files git tracks at HEAD ($rev); untracked and ignored files stay here"
  if [ "$DRY_RUN" = 1 ]; then echo "# ship $note"; else echo "shipping $note" >&2; fi
  run git -C "$root" archive --format=tar.gz --output="$out" HEAD
}

# A name that is safe in paths and remote commands: lower case letters, digits, dashes (the
# naming rule of TPU VMs and Kubernetes workloads alike).
check_name() {
  [[ "$1" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
    die "--name must be lower case letters, digits and dashes, starting with a letter, got '$1'"
}
