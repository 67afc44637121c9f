#!/usr/bin/env bash
# The two examples of ../shared/reference/nhn-documentreference-patch.txt, as written, against `make run` started
# with the NHN settings of README ("Communities, DPoP and the headers of a national registry"). Prints each answer.
set -e
F=.venv/bin/fhir-patch
BASE=http://127.0.0.1:8080/fhir
DOC=57a07380-1818-460f-85bb-81f8e4e45c42
URL=$BASE/DocumentReference/$DOC
HCID=homeCommunityId=2.16.578.1.12.4.5.100.3.15
ADMIN=$($F token --scope "system/*.cruds" --dpop-key .run/auth/admin.jwk)
EPJ=$($F token --scope "nhn:phr/mhd/create-documents-with-reference" --sub epj-1 --dpop-key .run/auth/epj.jwk)
nhn() {  # METHOD KEY TOKEN CONTENT-TYPE BODY: one request as an EPJ system sends it
  curl -s -X "$1" "$URL?$HCID" -H "Content-Type: $4" -H 'Accept: application/fhir+json; fhirVersion=4.0' \
       -H 'nhn-source-system: EPJ System 1.0' -H "nhn-event-id: $(date +%s%N)" \
       -H "Authorization: DPoP $3" -H "DPoP: $($F dpop-proof --key "$2" --method "$1" --url "$URL" --token "$3")" \
       -D /dev/stderr -d "$5"
  echo
}
# the document, as a registry would hold it (an administrator's token)
nhn PUT .run/auth/admin.jwk "$ADMIN" application/fhir+json "{\"resourceType\":\"DocumentReference\",\"id\":\"$DOC\",\"status\":\"current\",
  \"securityLabel\":[{\"coding\":[{\"system\":\"urn:oid:2.16.840.1.113883.5.25\",\"code\":\"N\"}]}],
  \"content\":[{\"attachment\":{\"contentType\":\"application/pdf\",\"url\":\"http://example.org/doc.pdf\"}}]}" 2>/dev/null | head -c 0
LABELS='[{"coding":[{"system":"urn:oid:2.16.840.1.113883.5.25","code":"N","display":"Normal"}]},
         {"coding":[{"system":"urn:oid:2.16.578.1.12.4.1.1.9603","code":"NORS","display":"Sperret"}]}]'
# Example 1: the DocumentReference with only the new security labels
nhn PATCH .run/auth/epj.jwk "$EPJ" application/fhir+json "{\"resourceType\":\"DocumentReference\",\"id\":\"$DOC\",\"securityLabel\":$LABELS}"
# Example 2: JSON Patch
nhn PATCH .run/auth/epj.jwk "$EPJ" application/json-patch+json "[{\"op\":\"replace\",\"path\":\"/securityLabel\",\"value\":[{\"coding\":[{\"system\":\"urn:oid:2.16.840.1.113883.5.25\",\"code\":\"R\"}]}]}]"
