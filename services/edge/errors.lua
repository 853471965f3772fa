-- Gatemesh edge: errors in OpenAI's shape, with the right HTTP status, for every route.
--
-- Responses. The services put the finished OpenAI error JSON in the trailer `gm-error-json`
-- and the HTTP status in `gm-http-status` (services/runtime/errors.py). An error sent before
-- any message reaches this filter as response headers, after the transcoder: this makes the
-- JSON the body, sets the status and drops the gRPC-only headers. Errors without those
-- trailers (a bug, an unimplemented method) get a generic body from grpc-status. The
-- transcoder's own 400s (a value of the wrong type) are reworded without the value the
-- client sent, naming the field and the type it must have.
--
-- Requests, before the transcoder: a method the path does not have is a 405 with `Allow`
-- (TRACE included), not the transcoder's 404; a body the transcoder parses must be valid
-- JSON, an object with only the message's fields (the transcoder would drop others
-- silently), or it is a 400 saying where ("the request body is not valid JSON (line 1
-- column 1)", as the proxy words it for the raw routes); timestamps in query strings may be
-- a date alone or a time without a zone (UTC), as the CLI takes them.
-- Headers gRPC metadata cannot carry, and the mesh's own, are dropped (drop_foreign_headers).
-- Native gRPC clients (content-type application/grpc) are left untouched.
--
-- ROUTES, FIELDS and TIMESTAMP_PARAMS are generated from the descriptor set
-- (services/edge/config.py) and prepended to this file.

local HTTP_OF_GRPC = {
  ["1"] = 499, ["2"] = 500, ["3"] = 400, ["4"] = 504, ["5"] = 404, ["6"] = 409,
  ["7"] = 403, ["8"] = 429, ["9"] = 400, ["10"] = 409, ["11"] = 400, ["12"] = 404,
  ["13"] = 500, ["14"] = 503, ["15"] = 500, ["16"] = 401,
}
local TYPE_OF_HTTP = {
  [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
  [404] = "not_found_error", [409] = "invalid_request_error", [429] = "rate_limit_error",
}
local DROPPED = {
  "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding", "gm-error-json", "gm-http-status",
}

local function json_string(text)
  local escaped = string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

local function generic_body(status, grpc_message)
  local message = string.gsub(grpc_message or "", "%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end)
  if message == "" then
    message = "request failed"
  end
  local kind = TYPE_OF_HTTP[status] or "api_error"
  return '{"error":{"message":' .. json_string(message) .. ',"type":"' .. kind .. '","param":null,"code":null}}'
end

local function error_body(message, kind, param, code)
  local param_json = param and json_string(param) or "null"
  return '{"error":{"message":' .. json_string(message) .. ',"type":"' .. kind .. '","param":' .. param_json
    .. ',"code":' .. (code and json_string(code) or "null") .. "}}"
end

-- A reply of the edge's own: local_reply_config gives it OpenAI's shape around `message`.
local function reply(handle, status, message, extra)
  local headers = {[":status"] = tostring(status), ["content-type"] = "text/plain"}
  for name, value in pairs(extra or {}) do
    headers[name] = value
  end
  handle:respond(headers, message)
end

-- The routes that match a path, and whether the method is one of theirs.
local function match_route(path, method)
  local allowed, seen, route = {}, {}, nil
  for _, entry in ipairs(ROUTES) do
    if string.find(path, entry[1]) then
      if entry[2] == method then
        return entry, nil
      end
      if not seen[entry[2]] then
        seen[entry[2]] = true
        allowed[#allowed + 1] = entry[2]
      end
      route = route or entry
    end
  end
  if route == nil then
    return nil, nil
  end
  table.sort(allowed)
  return nil, table.concat(allowed, ", ")
end

-- A strict JSON (RFC 8259) check: nil when valid, else the byte position of the first
-- character that cannot be there, or 0 when the document is valid but not an object, or
-- {field = "limits.colour"} for a member the message (`root`, a FIELDS entry) does not have.
local function json_problem(text, root)
  local pos, len = 1, #text
  local find, byte, sub = string.find, string.byte, string.sub
  local function ws()
    pos = find(text, "[^ \t\r\n]", pos) or len + 1
  end
  local value
  local function literal(word)
    if sub(text, pos, pos + #word - 1) ~= word then
      error(pos, 0)
    end
    pos = pos + #word
  end
  local function str()
    pos = pos + 1
    while true do
      local i = find(text, '["\\%z\1-\31]', pos)
      if i == nil then
        error(len + 1, 0)
      end
      local c = byte(text, i)
      if c == 34 then
        pos = i + 1
        return
      elseif c == 92 then
        local e = sub(text, i + 1, i + 1)
        if e == "u" and find(text, "^%x%x%x%x", i + 2) then
          pos = i + 6
        elseif e ~= "" and find('"\\/bfnrt', e, 1, true) then
          pos = i + 2
        else
          error(i, 0)
        end
      else
        error(i, 0)
      end
    end
  end
  local function number()
    local _, e = find(text, "^-?0", pos)
    if e == nil then
      _, e = find(text, "^-?[1-9]%d*", pos)
    end
    if e == nil then
      error(pos, 0)
    end
    pos = e + 1
    _, e = find(text, "^%.%d+", pos)
    if e then
      pos = e + 1
    elseif sub(text, pos, pos) == "." then
      error(pos + 1, 0)
    end
    _, e = find(text, "^[eE][+-]?%d+", pos)
    if e then
      pos = e + 1
    elseif find(text, "^[eE]", pos) then
      error(pos + 1, 0)
    end
  end
  local function container(close, member, depth, kind, prefix)
    pos = pos + 1
    ws()
    if sub(text, pos, pos) == close then
      pos = pos + 1
      return
    end
    while true do
      member(depth, kind, prefix)
      ws()
      local c = sub(text, pos, pos)
      if c == close then
        pos = pos + 1
        return
      elseif c ~= "," then
        error(pos, 0)
      end
      pos = pos + 1
      ws()
    end
  end
  local function pair(depth, kind, prefix)
    if sub(text, pos, pos) ~= '"' then
      error(pos, 0)
    end
    local start = pos + 1
    str()
    local key = sub(text, start, pos - 2)
    local inner = nil
    if kind ~= nil then
      local entry = kind[key]
      if entry == nil then
        error({field = prefix .. key}, 0)
      end
      inner = entry ~= true and FIELDS[entry] or nil
    end
    ws()
    if sub(text, pos, pos) ~= ":" then
      error(pos, 0)
    end
    pos = pos + 1
    ws()
    value(depth, inner, prefix .. key .. ".")
  end
  function value(depth, kind, prefix)
    if depth > 256 then
      error(pos, 0)
    end
    local c = sub(text, pos, pos)
    if c == "{" then
      container("}", pair, depth + 1, kind, prefix or "")
    elseif c == "[" then
      container("]", value, depth + 1, kind, prefix or "")
    elseif c == '"' then
      str()
    elseif c == "t" then
      literal("true")
    elseif c == "f" then
      literal("false")
    elseif c == "n" then
      literal("null")
    else
      number()
    end
  end
  local ok, where = pcall(function()
    ws()
    local first = sub(text, pos, pos)
    value(0, first == "{" and root or nil, "")
    ws()
    if pos <= len then
      error(pos, 0)
    end
    return first == "{" and -1 or 0
  end)
  if not ok then
    return where
  end
  return where >= 0 and where or nil
end

-- Line and column (in characters, from 1) of a byte position, as Python's json reports them.
local function line_column(text, pos)
  local line, start = 1, 1
  for i in string.gmatch(string.sub(text, 1, pos - 1), "()\n") do
    line, start = line + 1, i + 1
  end
  local _, continuation = string.gsub(string.sub(text, start, pos - 1), "[\128-\191]", "")
  return line, pos - start - continuation + 1
end

local function check_body(handle, root)
  local buffer = handle:body()
  local text = buffer and buffer:getBytes(0, buffer:length()) or ""
  if not string.find(text, "[^ \t\r\n]") then
    return true -- no body: every field takes its default
  end
  -- Syntax first (a broken body is "not valid JSON" wherever an undefined member comes
  -- before the fault), then the members against the message.
  local problem = json_problem(text, nil)
  if problem == nil and root ~= nil then
    problem = json_problem(text, root)
  end
  if problem == nil or type(problem) == "string" then
    return true -- valid, or a fault of this check (a Lua error): the transcoder judges
  end
  local message = "the request body must be a JSON object"
  if type(problem) == "table" then
    message = "the request body has a field this API does not define: " .. problem.field
  elseif problem > 0 then
    local line, column = line_column(text, problem)
    message = string.format("the request body is not valid JSON (line %d column %d)", line, column)
  end
  reply(handle, 400, message)
  return false
end

local function percent_decode(text)
  return (string.gsub(string.gsub(text, "%+", " "), "%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- The CLI's forms of a time, as RFC 3339: a date alone is midnight UTC, a time without a
-- zone is UTC. Anything else is left for the transcoder (which then says what it expects).
local function rfc3339(value)
  local text = percent_decode(value)
  local date, rest = string.match(text, "^(%d%d%d%d%-%d%d%-%d%d)(.*)$")
  if date == nil then
    return nil
  end
  if rest == "" then
    return date .. "T00:00:00Z"
  end
  local clock, zone = string.match(rest, "^[T t](%d%d:%d%d[:%d%.]*)(.*)$")
  if clock == nil then
    return nil
  end
  if #clock == 5 then
    clock = clock .. ":00"
  end
  if zone == "" then
    zone = "Z"
  end
  return date .. "T" .. clock .. string.gsub(string.gsub(zone, "%+", "%%2B"), "^z$", "Z")
end

local function normalize_times(handle, path)
  local route, query = string.match(path, "^([^?]*)%?(.*)$")
  if query == nil then
    return
  end
  local changed = false
  local parts = {}
  for part in string.gmatch(query, "[^&]+") do
    local name, value = string.match(part, "^([^=]*)=(.*)$")
    if name and TIMESTAMP_PARAMS[percent_decode(name)] then
      local fixed = rfc3339(value)
      if fixed and fixed ~= value then
        part, changed = name .. "=" .. fixed, true
      end
    end
    parts[#parts + 1] = part
  end
  if changed then
    handle:headers():replace(":path", route .. "?" .. table.concat(parts, "&"))
  end
end

-- A REST client's header becomes gRPC metadata. HTTP allows names gRPC does not (`a*b`,
-- `q~`: the service refused the whole call, a 500), a `-bin` name must carry base64, and
-- `grpc-*` (grpc-timeout) and `x-gatemesh-*` (the service credential) are the mesh's own:
-- none of these means anything to the API, so they are dropped rather than forwarded.
local function foreign_header(name)
  return not string.find(name, "^[%l%d_%.%-]+$")
    or string.sub(name, -4) == "-bin"
    or string.sub(name, 1, 5) == "grpc-"
    or string.sub(name, 1, 11) == "x-gatemesh-"
end

local function drop_foreign_headers(headers)
  local foreign = {}
  for name, _ in pairs(headers) do
    if string.sub(name, 1, 1) ~= ":" and foreign_header(name) then
      foreign[#foreign + 1] = name
    end
  end
  for _, name in ipairs(foreign) do
    headers:remove(name)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.sub(content_type, 1, 16) == "application/grpc" then
    handle:streamInfo():dynamicMetadata():set("gatemesh.edge", "grpc", "1")
    return
  end
  drop_foreign_headers(headers)
  local path = headers:get(":path") or "/"
  local method = headers:get(":method") or "GET"
  local route, allow = match_route(string.match(path, "^[^?]*"), method)
  if route == nil then
    if allow ~= nil then
      reply(handle, 405, "method " .. method .. " is not allowed here; allowed: " .. allow, {["allow"] = allow})
    end
    return -- an unknown path: the transcoder's 404
  end
  normalize_times(handle, path)
  if route[3] and not check_body(handle, FIELDS[route[4]]) then
    return
  end
end

local function drop_grpc_headers(headers)
  for _, name in ipairs(DROPPED) do
    headers:remove(name)
  end
end

local TYPE_WORDS = {
  TYPE_STRING = "a string", TYPE_BOOL = "a boolean (true or false)", TYPE_BYTES = "base64 text",
  TYPE_DOUBLE = "a number", TYPE_FLOAT = "a number", TYPE_ENUM = "one of the values the API lists",
  TYPE_MESSAGE = "an object",
}
local TIME_WORDS = "a date (2026-01-31) or an RFC 3339 time (2026-01-31T12:00:00Z)"

-- The transcoder's 400 for a value of the wrong type quotes the value: say instead which
-- field and what it must be. (Syntax errors never reach it: see check_body.)
function reword_transcoder_error(handle)
  local buffer = handle:body()
  local text = buffer and buffer:getBytes(0, buffer:length()) or ""
  local message = string.match(text, '"message":"(.-)","param"') or ""
  local field = string.match(message, "^([%w_%.%[%]]+): ")
  if field == nil then
    return -- not the transcoder's field error (e.g. an unknown query parameter): as it is
  end
  local want = "of another type"
  if string.find(message, "timestamp", 1, true) or string.find(message, "Timestamp", 1, true) then
    want = TIME_WORDS
  else
    local kind = string.match(message, "for type (TYPE_%u+%d*)")
    if kind then
      want = TYPE_WORDS[kind] or "an integer"
    end
  end
  local body = error_body(field .. ": must be " .. want, "invalid_request_error", field, "invalid_type")
  buffer:setBytes(body)
  local fresh = handle:headers()
  fresh:replace("content-length", tostring(string.len(body)))
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("gatemesh.edge")
  if meta ~= nil and meta["grpc"] == "1" then
    return
  end
  local headers = handle:headers()
  local grpc_status = headers:get("grpc-status")
  if grpc_status == nil and headers:get(":status") == "400" then
    reword_transcoder_error(handle)
    return
  end
  if grpc_status == nil or grpc_status == "0" then
    drop_grpc_headers(headers)
    return
  end
  local body = headers:get("gm-error-json")
  local status = tonumber(headers:get("gm-http-status") or "")
  if status == nil then
    status = HTTP_OF_GRPC[grpc_status] or 500
  end
  if body == nil then
    body = generic_body(status, headers:get("grpc-message"))
  end
  local buffer = handle:body(true)
  buffer:setBytes(body)
  -- Header handles go stale once body() has run: fetch them again.
  headers = handle:headers()
  drop_grpc_headers(headers)
  headers:replace(":status", tostring(status))
  headers:replace("content-type", "application/json")
  headers:replace("content-length", tostring(string.len(body)))
end
