// Turns C++ exceptions into JS errors carrying a `code` the TypeScript side maps to its typed errors.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

#include "blocks/blocks.h"

namespace adainfer {

inline Napi::Error js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// Runs fn, rethrowing any C++ exception as a JS error with a code.
template <typename Fn>
auto guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const ModelError& e) {
    throw js_error(env, e.code, e.what());
  } catch (const std::out_of_range& e) {
    throw js_error(env, "INVALID_OPTION", e.what());
  } catch (const std::bad_alloc&) {
    throw js_error(env, "NATIVE", "out of memory");
  } catch (const std::exception& e) {
    throw js_error(env, "NATIVE", e.what());
  }
}

}  // namespace adainfer
