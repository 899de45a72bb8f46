#include "teduh/core/outcome.h"

#include <boost/system/system_error.hpp>
#include <boost/throw_exception.hpp>

namespace teduh::core {

void throw_exception_from_error(const Failure& failure, const boost::source_location& loc) {
  boost::throw_exception(boost::system::system_error(failure.code, failure.message), loc);
}

Failure Fail(error_code code, std::string message) {
  if (message.empty()) message = code.message();
  return Failure{code, std::move(message)};
}

}  // namespace teduh::core
