#!/usr/bin/env bash
# Mutation check: applies deliberate breakages one at a time to a scratch copy of the tree and runs only the test
# files that claim to catch each one. A mutation is caught when one of those files fails; one that survives (every
# file passes) or that can no longer be applied (its code moved: update the mutation here) is a failure.
#
#   bash scripts/mutations.sh [name ...]     # all mutations, or only those named
#
# The checkout itself is never modified: the copy lives in a temporary directory removed on exit, Ctrl-C included.
# Prints one line per mutation ("mutation <name>: caught by <file>: <the failing assertion about it>") and ends with
# "mutations: N caught, N survived". A mutation counts as caught only when a failing assertion names what it broke
# (a pattern per mutation), so a test failing for an unrelated reason does not hide a survivor. The same files pass
# unmutated in the main run of scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export MEDIASOUP_WORKER_BIN=${MEDIASOUP_WORKER_BIN:-/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker}

# name | file | exact text (must occur once) | replacement | what the failing assertion must say (regex) |
# test files that should catch it, tried in order until one does
MUTATIONS=(
  "drop-pbx-to-meta-audio|src/media/MediasoupCallMedia.ts|  #onPbxAudio(packet: Buffer, header: RtpHeader): void {|  #onPbxAudio(packet: Buffer, header: RtpHeader): void {\n    if (header !== undefined) return;|PBX -> Meta tone|test/e2e/consumerCall.test.ts test/e2e/operations.test.ts"
  "break-webhook-dedupe|src/webhook/EventFilter.ts|function dedupeKey(event: MetaEvent): string {|function dedupeKey(event: MetaEvent): string {\n  if (event !== undefined) return String(Math.random());|duplicate|test/unit/webhook/webhookApp.test.ts test/reliability/webhookInput.test.ts"
  "swap-dtmf-digits-1-2|src/media/rtp.ts|export const DTMF_EVENT_DIGITS = '0123456789*#ABCD';|export const DTMF_EVENT_DIGITS = '0213456789*#ABCD';|digit|test/unit/media/telephoneEvents.test.ts test/e2e/dtmf.test.ts"
  "skip-the-bye|src/sip/SrfSipDialog.ts|    const bye = this.#dialog.destroy().then(|    const bye = Promise.resolve().then(|BYE|test/e2e/consumerCall.test.ts"
  "opus-native-addon-in-media-threads|src/media/dsp/opus.ts|  if (isMainThread) {|  if (isMainThread !== undefined) {|its own, sample for sample|test/unit/media/opusThreads.test.ts"
  "leak-a-pbx-rtp-socket|src/media/PbxRtpSocket.ts|    this.#outer.close();\n    this.#inner.close();|    this.#outer.close();|UDP socket|test/unit/media/lifecycle.test.ts test/e2e/manyCalls.test.ts"
)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/msb-mutations.XXXXXX")
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# The tree as it is (tracked and new files, not ignored ones); node_modules shared through a link.
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$scratch"
ln -s "$ROOT/node_modules" "$scratch/node_modules"

# Replace the one occurrence of $2 by $3 in file $1 (both with \n for line breaks); fails when it is not there once.
apply() {
  node -e '
    const fs = require("node:fs");
    const [file, from, to] = process.argv.slice(1).map((s, i) => (i === 0 ? s : s.replace(/\\n/g, "\n")));
    const text = fs.readFileSync(file, "utf8");
    const count = text.split(from).length - 1;
    if (count !== 1) { process.stderr.write(`expected the text once in ${file}, found it ${count} times\n`); process.exit(1); }
    fs.writeFileSync(file, text.replace(from, () => to));
  ' "$1" "$2" "$3"
}

caught=0
survived=0
for m in "${MUTATIONS[@]}"; do
  IFS='|' read -r name file from to expect tests <<<"$m"
  if [ "$#" -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  cp "$scratch/$file" "$scratch/$file.orig"
  if ! (cd "$scratch" && apply "$file" "$from" "$to"); then
    echo "mutation $name: NOT APPLIED (its code in $file changed: update scripts/mutations.sh)"
    survived=$((survived + 1))
    continue
  fi
  verdict=""
  others=""
  for test in $tests; do
    out=$(cd "$scratch" && timeout 600 npx tap --reporter=tap --disable-coverage "$test" 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] && continue
    # Caught only by an assertion about what was broken: a test failing for another reason (a timing check on a
    # loaded machine) proves nothing about the mutation.
    failing=$(echo "$out" | grep -E '^\s*not ok [0-9]+ - ' | sed -E 's/^\s*not ok [0-9]+ - //; s/ # time=.*//')
    match=$(echo "$failing" | grep -E -- "$expect" | head -n 1)
    if [ -n "$match" ]; then
      verdict="caught by $test: $match"
      break
    fi
    others="$others; $test failed on: $(echo "$failing" | head -n 1)"
  done
  mv "$scratch/$file.orig" "$scratch/$file"
  if [ -n "$verdict" ]; then
    echo "mutation $name: $verdict"
    caught=$((caught + 1))
  else
    echo "mutation $name: SURVIVED (no failing assertion of $tests says /$expect/${others})"
    survived=$((survived + 1))
  fi
done
echo "mutations: $caught caught, $survived survived"
[ "$survived" -eq 0 ]
