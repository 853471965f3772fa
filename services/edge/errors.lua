-- Gatemesh edge: gRPC errors in OpenAI's shape, with the right HTTP status.
--
-- The services put the finished OpenAI error JSON in the trailer `gm-error-json` and the
-- HTTP status in `gm-http-status` (services/runtime/errors.py). An error sent before any
-- message reaches this filter as response headers, after the transcoder: this makes the
-- JSON the body, sets the status and drops the gRPC-only headers. Errors without those
-- trailers (a bug, an unimplemented method) get a generic body from grpc-status.
-- Native gRPC clients (content-type application/grpc) are left untouched.

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

function envoy_on_request(handle)
  local content_type = handle:headers():get("content-type") or ""
  if string.sub(content_type, 1, 16) == "application/grpc" then
    handle:streamInfo():dynamicMetadata():set("gatemesh.edge", "grpc", "1")
  end
end

local function drop_grpc_headers(headers)
  for _, name in ipairs(DROPPED) do
    headers:remove(name)
  end
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("gatemesh.edge")
  if meta ~= nil and meta["grpc"] == "1" then
    return
  end
  local headers = handle:headers()
  local grpc_status = headers:get("grpc-status")
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
