#!/bin/sh
# Prints every step-policy key the loader accepts (src/policy_load.c's jload
# tables `keys[]` and `limits_fields[]`), one per line, as README's "Policy
# keys" table names them: top-level keys bare, nested ones as route.host, callers[].claims,
# allow[].methods, limits.burst. A `keys[]` array in a function this script
# does not know is an error, so a new nesting level cannot be left out.
cd "$(dirname "$0")/.."
awk '
  /^static [a-z_ ]*\*?load_[a-z_]+\(/ || /^static struct policy \*load_one\(/ {
      fn = $0; sub(/\(.*/, "", fn); sub(/.*[ *]/, "", fn)
  }
  /static const struct jload_field limits_fields\[\] = \{/ { fn = "load_limits" }
  /static const struct jload_field (keys|limits_fields)\[\] = \{/ { collecting = 1; text = "" }
  collecting { text = text $0 }
  collecting && /\};/ {
      collecting = 0
      if (fn == "load_one") prefix = ""
      else if (fn == "load_route") prefix = "route."
      else if (fn == "load_callers") prefix = "callers[]."
      else if (fn == "load_allow") prefix = "allow[]."
      else if (fn == "load_limits") prefix = "limits."
      else if (fn == "load_signed_caller") prefix = "callers[]."
      else if (fn == "load_minted_by") prefix = "callers[].signed_url.minted_by."
      else if (fn == "load_sign") prefix = "sign[]."
      else { print "policy_keys.sh: keys[] in unknown function " fn > "/dev/stderr"; bad = 1; next }
      while (match(text, /"[a-z_]+"/)) {
          print prefix substr(text, RSTART + 1, RLENGTH - 2)
          text = substr(text, RSTART + RLENGTH)
      }
  }
  END { exit bad }
' src/policy_load.c
