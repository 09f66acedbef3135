# Shell helpers shared by examples/results_breast.sh and examples/results_busbra.sh (sourced,
# not run). The caller sets $commands (its command log) and $work (the work folder) first.

log() {  # the command, as it can be re-run, into the commands file
  local line
  line=$(printf '%q ' "$@")
  echo "${line% }" >> "$commands"
}

times="$work/times.tsv"  # both scripts' breastus commands: when, seconds, exit status, command
breastus() {  # every breastus command that runs is timed (one that a resumed run skips is not)
  local t0=$SECONDS rc=0 line
  command breastus "$@" || rc=$?
  line=$(printf '%q ' breastus "$@")
  printf '%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$((SECONDS - t0))" "$rc" "${line% }" >> "$times"
  return "$rc"
}

run() {  # log the command and run it
  log "$@"
  "$@"
}

run_unless() {  # run_unless FILE COMMAND...: log the command; run it unless FILE exists
  local file=$1
  shift
  log "$@"
  [ -f "$file" ] || "$@"
}
