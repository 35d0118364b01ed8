#!/bin/sh
# Prints every step-policy key the loader accepts (src/policy_load.c's jload
# tables, `static const struct jload_field NAME_fields[]`), one per line, as
# README's "Policy keys" table names them: top-level keys bare, nested ones as
# route.host, callers[].claims, allow[].methods, limits.burst. A table this
# script does not know is an error, so a new nesting level cannot be left out.
cd "$(dirname "$0")/.."
awk '
  /^static const struct jload_field [a-z_]+\[\] = \{/ {
      name = $0; sub(/^static const struct jload_field /, "", name); sub(/\[.*/, "", name)
      if (name == "policy_fields") prefix = ""
      else if (name == "route_fields") prefix = "route."
      else if (name == "caller_fields") prefix = "callers[]."
      else if (name == "allow_fields") prefix = "allow[]."
      else if (name == "limits_fields") prefix = "limits."
      else if (name == "signed_caller_fields") prefix = "callers[]."
      else if (name == "signed_url_fields") prefix = "callers[].signed_url."
      else if (name == "minted_by_fields") prefix = "callers[].signed_url.minted_by."
      else if (name == "sign_fields") prefix = "sign[]."
      else { print "policy_keys.sh: unknown table " name > "/dev/stderr"; bad = 1; next }
      collecting = 1; text = ""
  }
  collecting { text = text $0 }
  collecting && /\};/ {
      collecting = 0
      while (match(text, /(JL_[A-Z]+\(|\.key = )"[a-z_]+"/)) {
          m = substr(text, RSTART, RLENGTH); sub(/^[^"]*"/, "", m); sub(/"$/, "", m)
          print prefix m
          text = substr(text, RSTART + RLENGTH)
      }
  }
  END { exit bad }
' src/policy_load.c
